"""fio through a loop device on udrbd and its baselines: python -m bench."""
