"""Definitions marketers write: campaign YAML files, the nurture policy and (later) scoring and routing rules."""
