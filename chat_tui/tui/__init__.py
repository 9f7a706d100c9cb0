"""Everything Textual. Nothing outside this package imports textual or rich."""
