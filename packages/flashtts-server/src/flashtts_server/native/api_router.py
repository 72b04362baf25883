"""Routes of the native API; the logic is in serving.py."""

from __future__ import annotations

import asyncio
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from flashtts_core.request import DiffusionParams, Level
from pydantic import ValidationError

from ..auth import require_api_key
from ..dependencies import get_runtime, get_settings
from ..route_table import synthesis_route
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from ..synthesis_fields import DEFAULT_FORMAT, SamplingFields
from . import serving
from .protocol import MultiSpeakRequest, ServerInfo, SpeakRequest

router = APIRouter(tags=["native"], dependencies=[Depends(require_api_key)])

AUDIO_RESPONSES = {
    200: {
        "description": "Audio in the requested format; the X-Sample-Rate header gives its sample rate.",
        "content": {
            "audio/mpeg": {},
            "audio/wav": {},
            "audio/pcm": {},
            "audio/ogg": {},
            "audio/aac": {},
            "audio/flac": {},
        },
    },
    400: {"description": 'Bad input, in the error shape {"error": {...}}.'},
}


@router.post("/clone_voice", response_class=Response, responses=AUDIO_RESPONSES)
@synthesis_route
async def clone_voice(
    request: Request,
    text: str = Form(..., min_length=1, description="Text to synthesize."),
    reference_audio: Optional[str] = Form(None, description="Reference audio as an http(s) URL or base64."),
    reference_audio_file: Optional[UploadFile] = File(
        None, description="Reference audio upload (wav, flac, mp3, ogg …)."
    ),
    latent_file: Optional[UploadFile] = File(None, description="MegaTTS3 latent (.npy) for the reference."),
    reference_text: Optional[str] = Form(None, max_length=10_000, description="Transcript of the reference audio."),
    pitch: Optional[Level] = Form(None),
    speed: Optional[Level] = Form(None),
    temperature: Optional[float] = Form(None, ge=0, le=5, allow_inf_nan=False),
    top_k: Optional[int] = Form(None, ge=0, le=1_000_000),
    top_p: Optional[float] = Form(None, gt=0, le=1, allow_inf_nan=False),
    repetition_penalty: Optional[float] = Form(None, ge=0.01, le=10, allow_inf_nan=False),
    max_tokens: Optional[int] = Form(None, ge=1, le=1_000_000),
    seed: Optional[int] = Form(None, ge=0, le=2**63 - 1),
    length_threshold: Optional[int] = Form(None, description="Clamped to 1–100000; default 50."),
    window_size: Optional[int] = Form(None, description="Clamped to 1–100000; default 50."),
    time_step: Optional[int] = Form(
        None, ge=1, le=DiffusionParams.MAX_TIME_STEP, description="MegaTTS3: flow-matching steps."
    ),
    p_w: Optional[float] = Form(
        None, ge=0, le=DiffusionParams.MAX_WEIGHT, allow_inf_nan=False, description="MegaTTS3: intelligibility weight."
    ),
    t_w: Optional[float] = Form(
        None, ge=0, le=DiffusionParams.MAX_WEIGHT, allow_inf_nan=False, description="MegaTTS3: similarity weight."
    ),
    stream: bool = Form(False),
    response_format: str = Form(DEFAULT_FORMAT, description="mp3, opus, aac, flac, wav, pcm."),
    sample_rate: Optional[int] = Form(None, ge=8000, le=48000, description="Resample the output to this rate (Hz)."),
    runtime: TTSRuntime = Depends(get_runtime),
    settings: ServerSettings = Depends(get_settings),
) -> Response:
    """Clone the voice of a reference clip and speak ``text`` with it."""
    try:
        sampling = SamplingFields(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            max_tokens=max_tokens,
            seed=seed,
            length_threshold=length_threshold,
            window_size=window_size,
            time_step=time_step,
            p_w=p_w,
            t_w=t_w,
        )
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    form = serving.CloneForm(
        text=text,
        sampling=sampling,
        stream=stream,
        response_format=response_format,
        sample_rate=sample_rate,
        reference_audio=reference_audio,
        reference_audio_file=reference_audio_file,
        latent_file=latent_file,
        reference_text=reference_text,
        pitch=pitch,
        speed=speed,
    )
    return await serving.clone_voice(request, runtime, settings, form)


@router.post("/speak", response_class=Response, responses=AUDIO_RESPONSES)
@synthesis_route
async def speak(
    request: Request,
    body: SpeakRequest,
    runtime: TTSRuntime = Depends(get_runtime),
    settings: ServerSettings = Depends(get_settings),
) -> Response:
    """Speak ``text`` with a saved role or a built-in voice."""
    return await serving.speak(request, runtime, settings, body)


@router.post("/multi_speak", response_class=Response, responses=AUDIO_RESPONSES)
@synthesis_route
async def multi_speak(
    request: Request,
    body: MultiSpeakRequest,
    runtime: TTSRuntime = Depends(get_runtime),
    settings: ServerSettings = Depends(get_settings),
) -> Response:
    """Speak a dialogue: each ``<role:NAME>`` segment in its role's voice, a short pause between speakers."""
    return await serving.multi_speak(request, runtime, settings, body)


@router.get("/server_info", response_model=ServerInfo)
async def server_info(
    runtime: TTSRuntime = Depends(get_runtime), settings: ServerSettings = Depends(get_settings)
) -> ServerInfo:
    """The loaded model, engine, backend, sample rate, voices, roles, capabilities and limits."""
    return await asyncio.to_thread(serving.server_info, runtime, settings)  # lists the role store
