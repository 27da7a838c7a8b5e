"""Conversation tests in YAML: scenario files, their loader and schema, and the runner.

``run-pipeline test BOT.yaml [SCENARIOS.yaml ...]`` plays each scenario as a simulated caller
over a real AudioSocket connection and checks what the bot said, how fast, and how the call
ended (see ``model`` for the file format and ``runner`` for how each step is played and judged).
"""
