"""Training-free backbone search for DamoFD's MasterNet (DDSAR-scored evolution)."""
