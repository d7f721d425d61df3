"""Loopback fakes of the upstream image APIs (OpenAI Images, Replicate predictions).

The fakes speak the providers' real wire protocols closely enough that the official `openai`
and `replicate` SDKs cannot tell them from production (see /work/shared/WIRE.md). The SDKs are
never patched or mocked: tests point them, or the gateway's adapters, at `fake.base_url`.

- `tests.fakes.images`: tiny deterministic Pillow images and broken-image helpers.
- `tests.fakes.openai_server.FakeOpenAI`: `/v1/images/generations`, `/v1/images/edits`,
  `/v1/models`; the model and token tables live in `tests.fakes.openai_models`.
- `tests.fakes.replicate_server.FakeReplicate`: predictions, models and versions; the model
  schemas and aspect-ratio table live in `tests.fakes.replicate_models`.
- `tests.fakes.base`: what both share (start/stop, the request log, scripted faults).
"""
