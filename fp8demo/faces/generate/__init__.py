"""The Generate page: the Generate and Compare tabs and the public API. Never imports torch."""
