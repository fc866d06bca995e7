"""`medchat serve`: the OpenAI-compatible server over one loaded model."""

from __future__ import annotations

import click

from medchat.cli.options import generation_options, local_model_options, offline_option, settings_from


@click.command()
@local_model_options
@generation_options
@offline_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 0.0.0.0 opens the server to your network: add --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0 = any free one).")
@click.option("--api-key", default=None, help="Require 'Authorization: Bearer KEY' on /v1 requests.")
@click.option("--served-model-name", default="", help="Model id clients send (default: the adapter's name, else the model's).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most requests waiting for the model; more get HTTP 503.")
@click.option("--log-requests", is_flag=True, help="Print one line per request to stderr.")
def serve(host: str, port: int, api_key: str | None, served_model_name: str, max_queue: int,
          log_requests: bool, **params) -> None:
    """Serve the model over an OpenAI-compatible API: /v1/chat/completions, /v1/models, /health.

    Streamed deltas carry the reasoning in `reasoning_content` and the answer in `content` (like vLLM's
    deepseek_r1 reasoning parser). Requests take turns on the one loaded model. Ctrl+C stops.
    """
    from medchat.server.run import run_serve  # the HTTP server's libraries: only when serving

    settings = settings_from(params, api_key=api_key)
    run_serve(settings, host=host, port=port, served_name=served_model_name, max_queue=max_queue,
              log_requests=log_requests)
