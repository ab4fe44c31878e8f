"""Gradio app where people compare or rank model outputs and robot clips."""
