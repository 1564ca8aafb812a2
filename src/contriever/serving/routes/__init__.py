"""The API's routes by concern: `search` (dense, BM25, hybrid), `embeddings` (OpenAI's, infinity's
and text-embeddings-inference's routes), `page` (the comparison page and its icon), `ops` (health,
/info, metrics). Each is a FastAPI `APIRouter` whose handlers reach the service through
`service.ServiceDep`."""
