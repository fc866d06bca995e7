"""What medchat keeps on disk for the user: adapters and their manifests, chat history."""
