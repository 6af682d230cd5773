"""Views that tie units to real photos and to each other: activation atlases, feature
accentuation, caricatures and feature inversion. Each renders all its images in one batch."""
