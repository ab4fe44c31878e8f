"""Preference-based reward learning for a simulated KUKA iiwa14 arm (MuJoCo)."""
