"""Runnable kstreamlet services (run with ``kstreamlet run services.<name>:app``)."""
