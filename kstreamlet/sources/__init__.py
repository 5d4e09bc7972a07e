"""Custom sources (see :mod:`kstreamlet.sources.base`)."""
