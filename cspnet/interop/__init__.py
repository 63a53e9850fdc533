"""Interop with other implementations: timm (`interop.timm`) and darknet (`interop.darknet`)."""
