"""Kiosk mode: pure rules (idle, fairness), moderation, the kiosk service and its page. Never imports torch."""
