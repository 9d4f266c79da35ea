# This folder installs as ``fedchain.coordinator`` only: with the repository root on
# sys.path it would also be found as a top-level ``coordinator`` package and shadow (or be
# shadowed by) any other package of that generic name.
if __name__ != "fedchain.coordinator":
    raise ImportError("fedchain's coordinator package is imported as 'fedchain.coordinator', not 'coordinator'")
