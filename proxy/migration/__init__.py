"""`imagegate migrate`: copy one configuration's stores into another's.

`records` holds the values that move (never a key's secret, never an open reservation),
`ports` the capability each store kind adds for it (`dump` what it holds, `load` what is
missing), `embedded_disk` and `embedded_sqlite` those capabilities over the embedded files,
`copying` the order and batching of a run, and `command` the CLI around it.
"""
