"""Routing policies: pure Python over snapshots (no Ray). The Ray Serve RequestRouter and the
simulator both drive these same objects."""
