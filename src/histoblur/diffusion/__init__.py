"""Diffusion schedules and samplers: the DDPM forward process, and regional restoration loops."""
