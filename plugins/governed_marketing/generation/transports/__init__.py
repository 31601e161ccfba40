"""How drafts are obtained: offline templates, sync OpenAI calls, or the OpenAI Batch API.

`offline.OfflineProvider` and `sync.OpenAIProvider` are `ContentProvider`s (generation/base.py):
`draft_many` with the same callbacks, so the campaign's sync step does not know which one it has.
The batch transport submits and collects across task tries (a batch outlives a process), so it is a
set of steps over the ledger instead (`batch.submit`, `reattach`, `collect`), driven by
generation/batch_flow.py. All three send what generation/request.py builds.
"""
