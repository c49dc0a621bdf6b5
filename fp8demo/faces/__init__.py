"""The faces: pages served over the one DemoService, each described to the platform by a `web.face.Face`.

generate/  the Generate and Compare tabs and the public API (`python -m fp8demo serve`)
kiosk/     a full-screen, touch-first exhibit for one screen (`python -m fp8demo serve --kiosk`)
"""
