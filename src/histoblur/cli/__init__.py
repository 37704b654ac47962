"""Thin command-line layer: parse, build a config, call one library function."""
