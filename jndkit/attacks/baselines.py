"""Baselines beyond the sign-gradient family: DeepFool, C&W-L2 and a minimum-norm attack."""
