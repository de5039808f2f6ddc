"""Pictures and records of a run: value ranges and colour maps, sheets, montages and the overview, the manifest,
the page and the terminal tables.  Imports every wing below it, up to ``explain``."""
