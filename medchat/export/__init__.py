"""Adapters leaving medchat: merged 16-bit model folders and chat templates for other servers."""
