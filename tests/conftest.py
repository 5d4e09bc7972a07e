"""Test-suite wide settings. Fixtures come from kstreamlet's own pytest plugin (``kstreamlet.testing.pytest_plugin``)."""
