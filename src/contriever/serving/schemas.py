"""The bodies the API takes and gives, as pydantic models: FastAPI validates requests with them and
writes the OpenAPI document from them, so the document says what the server does.

Integers in JSON bodies are strict (`"k": true` or `"k": "10"` is a 400, not k = 1 or 10); texts are
strings only (token ids are refused with a 422 that says what to change, `errors.TOKEN_ARRAY_HINT`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from contriever.serving.searcher import MODES

Texts = str | list[str]


# ----- search ----------------------------------------------------------------------------------------
class SearchBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(description="the queries, each a non-empty string")
    k: StrictInt = Field(10, description="documents per query (1 to the server's --max-k, 1000 by default)")
    mode: str = Field("dense", description="dense, bm25 or hybrid", json_schema_extra={"enum": list(MODES)})


class Hit(BaseModel):
    id: str
    score: float
    title: str
    snippet: str
    highlights: list[list[int]] = Field(description="[start, end) spans of the snippet matching the query")
    title_highlights: list[list[int]]


class SearchResult(BaseModel):
    query: str
    mode: str
    k: int
    hits: list[Hit] = Field(description="at most k documents, best first (BM25 returns only matching ones)")
    took_ms: float


class SearchBatchResult(BaseModel):
    mode: str
    k: int
    results: list[SearchResult]
    took_ms: float


# ----- embeddings: OpenAI's and infinity's /v1/embeddings ----------------------------------------------
class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields such as `user`
    input: Texts = Field(description="a text or a list of texts (token ids are not accepted)")
    model: str | None = Field(None, description="ignored: the server has one model (see /v1/models)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, description="must be the model's dimension if given")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ----- text-embeddings-inference's /embed and /rerank ---------------------------------------------------
class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Texts = Field(description="a text or a list of texts")
    normalize: StrictBool = Field(True, description="L2-normalize; false is refused for a normalizing model")
    truncate: StrictBool = Field(
        False, description="cut texts at the model's max length; false: a longer text is a 413"
    )
    truncation_direction: Literal["Right"] = Field("Right", description="only Right: the end is cut")
    dimensions: StrictInt | None = Field(None, description="must be the model's dimension if given")


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str
    texts: list[str]
    raw_scores: StrictBool = Field(
        False, description="true: inner products of the vectors as the model makes them; false: cosine"
    )
    return_text: StrictBool = False
    truncate: StrictBool = Field(False, description="cut texts at the model's max length; false: a 413")
    truncation_direction: Literal["Right"] = "Right"


class Rank(BaseModel):
    index: int = Field(description="position of the text in the request")
    score: float
    text: str | None = None


# ----- operations --------------------------------------------------------------------------------------
class Batching(BaseModel):
    enabled: bool
    max_batch_size: int
    max_wait_ms: float
    queued: int
    max_queue: int


class Health(BaseModel):
    status: Literal["ok", "stopping"]
    model: str | None
    documents: int
    modes: list[str]
    dim: int | None
    batching: Batching
    uptime_s: float


class Info(BaseModel):
    """text-embeddings-inference's /info, with what a search service adds."""

    model_id: str | None
    model_dtype: str | None = Field(description="float32 or bfloat16: the precision of the forward pass")
    model_type: dict = Field(description='{"embedding": {"pooling": "mean"}}, as TEI writes it')
    dim: int | None
    normalize: bool | None = Field(description="whether the model's vectors are L2-normalized")
    max_input_length: int | None = Field(description="tokens per text; longer texts are cut")
    max_client_batch_size: int = Field(description="texts per embeddings request")
    max_batch_size: int = Field(description="texts per dynamic batch")
    max_queue: int = Field(description="texts waiting for the model before requests get 429")
    max_chars: int
    max_k: int
    index: str | None
    documents: int
    modes: list[str]
    version: str
    auth: bool = Field(description="whether requests need an API key")
