"""Files and the small utilities everything stands on: records and pool files, the embedded
default's data, evaluation sets, named seeds, argument checks, atomic writes and shard bounds.

Imports nothing from the other sub-packages.
"""
