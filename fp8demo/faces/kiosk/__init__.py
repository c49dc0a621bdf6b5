"""The kiosk: pure rules (idle, fairness), moderation, its service, page and face. Never imports torch."""
