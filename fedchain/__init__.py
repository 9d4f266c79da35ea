"""fedchain core: what both the hospital node and the coordinator use.

Plan format, model registry, canonical serialization, encrypted envelopes,
identities and the command-line interface. Role packages (``node``,
``coordinator``) build on this; this package's library modules never import
them (only :mod:`fedchain.cli` wires the roles together).
"""

import logging

__version__ = "0.1.0"

# A library stays silent unless its user configures logging; the role processes do
# (fedchain.logs.setup), and their lines go to stderr with time, proposal and round.
logging.getLogger("fedchain").addHandler(logging.NullHandler())
