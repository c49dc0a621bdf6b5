"""The web faces (Generate and Compare tabs, API, health) on top of one DemoService. Never imports torch."""
