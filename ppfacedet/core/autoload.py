"""Import every module of a package so that their registry decorators run.

Families add files, never edit a list: dropping ``heads/foo_head.py`` in is
enough for ``type: FooHead`` to build.
"""
import importlib
import pkgutil


def import_submodules(package_name):
    package = importlib.import_module(package_name)
    for info in pkgutil.walk_packages(package.__path__, package_name + "."):
        importlib.import_module(info.name)
