# This folder installs as ``fedchain.contracts`` only: with the repository root on
# sys.path it would also be found as a top-level ``contracts`` package and shadow (or be
# shadowed by) any other package of that generic name.
if __name__ != "fedchain.contracts":
    raise ImportError("fedchain's contracts package is imported as 'fedchain.contracts', not 'contracts'")
