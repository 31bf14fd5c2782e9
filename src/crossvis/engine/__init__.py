"""The Lightning module, the online runner, and the training / evaluation orchestration."""
