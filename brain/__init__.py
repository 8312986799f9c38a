"""Pure decisions, no I/O: routing of turns, prompts, sentence splitting, emotions."""
