"""Everything that runs a topology: tasks, the checkpoint cycle, the consumer-group member.

Users never import from here; the public surface is :mod:`kstreamlet`.
"""
