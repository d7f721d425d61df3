"""Provider adapters: one module per upstream API, behind the `Provider` port."""
