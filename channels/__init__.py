"""Channel adapters: one module per platform, all behind the SPI in :mod:`channels.base`."""
