"""`e4e serve`: a local web app to invert an image and edit it with sliders.

core.py holds the logic (plain functions and an `Editor`, testable without a browser or Gradio);
app.py lays it out as a Gradio page (the optional extra `e4e[web]`).
"""
