"""The HTTP memory service: search API, durable dialogue inbox and OpenAI-compatible memory proxy."""
