#!/usr/bin/env bash
# Start Chromium full screen on the kiosk page once the app reports ready.
# Usage: launch-kiosk.sh [URL]   (default http://127.0.0.1:7860/)
set -euo pipefail
URL="${1:-${FP8DEMO_KIOSK_URL:-http://127.0.0.1:7860/}}"
READY="${URL%/}/health/ready"
BROWSER="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome)}"

# Wait for warm-up: /health/ready answers 200 only once the model has made its first picture.
until curl --silent --fail --max-time 5 "$READY" >/dev/null; do
    echo "launch-kiosk: waiting for $READY" >&2
    sleep 2
done

PROFILE="${XDG_RUNTIME_DIR:-/tmp}/fp8demo-kiosk-profile"
rm -rf "$PROFILE"  # a fresh profile each start: no "restore pages?" bubble, no stale cache
exec "$BROWSER" \
    --kiosk --app="$URL" \
    --user-data-dir="$PROFILE" \
    --no-first-run --no-default-browser-check \
    --noerrdialogs --disable-infobars --disable-session-crashed-bubble --hide-crash-restore-bubble \
    --disable-translate --disable-features=Translate,TranslateUI,OverscrollHistoryNavigation,TouchpadOverscrollHistoryNavigation \
    --overscroll-history-navigation=0 --disable-pinch \
    --check-for-update-interval=31536000 --disable-component-update --disable-background-networking \
    --disable-sync --password-store=basic --autoplay-policy=no-user-gesture-required
