"""URLs of the hosts that publish official files, and Google Drive's
confirmation page.

Google Drive serves a small file at once, but for a large one (it cannot
virus-scan it) it first answers with an HTML page whose download form (or,
on older pages, a link with ``confirm=<token>``) leads to the file. The page
is parsed, never executed; a second page instead of the file is an error.
"""
import html.parser
import urllib.parse

# Module attributes so that tests can point them at a server on 127.0.0.1.
DRIVE_DOWNLOAD = "https://drive.google.com/uc"
MODELSCOPE_API = "https://modelscope.cn/api/v1/models"


def drive_url(file_id):
    return f"{DRIVE_DOWNLOAD}?{urllib.parse.urlencode({'export': 'download', 'id': file_id})}"


def drive_page(file_id):
    return f"https://drive.google.com/file/d/{file_id}/view"


def modelscope_url(ref):
    """``'<model id>@<revision>:<file path>'`` -> ModelScope's file API URL."""
    model, _, rest = ref.partition("@")
    revision, _, path = rest.partition(":")
    query = urllib.parse.urlencode({"Revision": revision, "FilePath": path})
    return f"{MODELSCOPE_API}/{model}/repo?{query}"


def modelscope_page(ref):
    return f"https://modelscope.cn/models/{ref.partition('@')[0]}/files"


class _ConfirmationPage(html.parser.HTMLParser):
    """Collects the download form (action + inputs) and any link carrying ``confirm=``."""

    def __init__(self):
        super().__init__()
        self.form_action = None
        self.inputs = []
        self.confirm_links = []
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and ("download" in (attrs.get("id") or "") or "download" in (attrs.get("action") or "")):
            self.form_action, self._in_form = attrs.get("action"), True
        elif tag == "input" and self._in_form and attrs.get("name"):
            self.inputs.append((attrs["name"], attrs.get("value") or ""))
        elif tag == "a" and "confirm=" in (attrs.get("href") or ""):
            self.confirm_links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False


def drive_confirmation_url(page, page_url):
    """The URL Google Drive's 'cannot scan this file' page leads to, or None if the page has no download form."""
    parser = _ConfirmationPage()
    parser.feed(page)
    if parser.form_action:
        action = urllib.parse.urljoin(page_url, parser.form_action)
        return f"{action}?{urllib.parse.urlencode(parser.inputs)}" if parser.inputs else action
    if parser.confirm_links:
        return urllib.parse.urljoin(page_url, parser.confirm_links[0])
    return None
