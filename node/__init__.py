# This folder installs as ``fedchain.node`` only: with the repository root on
# sys.path it would also be found as a top-level ``node`` package and shadow (or be
# shadowed by) any other package of that generic name.
if __name__ != "fedchain.node":
    raise ImportError("fedchain's node package is imported as 'fedchain.node', not 'node'")
