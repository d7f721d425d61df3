"""HTTP routes: the OpenAI image routes, blobs, models and health."""
