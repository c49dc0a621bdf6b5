"""The platform every face is served on: one DemoService (engine, PNG store), the server (health, queue, launch),
the door (access), bounded disk (retention), the shared Gradio helpers and the Generate form. A face (fp8demo/faces/)
plugs in as a `face.Face`; nothing here names one. Never imports torch."""
