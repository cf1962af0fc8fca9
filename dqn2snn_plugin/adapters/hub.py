"""Fetch RL-Zoo and CleanRL checkpoints from the Hugging Face Hub (`hf://sb3/dqn-PongNoFrameskip-v4`).

The RL-Zoo names a repo `<org>/<algo>-<EnvId>` and its checkpoint `<algo>-<EnvId>.zip`; CleanRL names
a repo `<org>/<EnvId>-<exp_name>-seed<N>` and its checkpoint `<exp_name>.cleanrl_model` (see
`adapters.cleanrl`); `hf://<org>/<repo>/<file>` names another file. `huggingface_hub` is an optional dependency
(extra `[hub]`); the download itself is `download`, kept thin so that tests can replace it.
"""

from __future__ import annotations

from pathlib import Path

from dqn2snn_plugin.adapters import cleanrl
from dqn2snn_plugin.errors import CheckpointError

PREFIX = "hf://"


def parse_hub_id(hub_id: str) -> tuple[str, str]:
    """`hf://org/repo[/file]` -> (`org/repo`, file name), the file defaulting to CleanRL's model file for a
    CleanRL repo name, else to `<repo>.zip`."""
    parts = hub_id.removeprefix(PREFIX).strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise CheckpointError(
            f"{hub_id}: a hub id looks like hf://<org>/<repo> or hf://<org>/<repo>/<file>, "
            "e.g. hf://sb3/dqn-PongNoFrameskip-v4"
        )
    default = cleanrl.hub_file(parts[1]) or f"{parts[1]}.zip"
    return f"{parts[0]}/{parts[1]}", parts[2] if len(parts) == 3 else default


def env_id_of(hub_id: str) -> str | None:
    """The env id a CleanRL repo name holds (its file name does not); None for other repos."""
    repo_id, _ = parse_hub_id(hub_id)
    return cleanrl.hub_env_id(repo_id.split("/")[1])


def download(hub_id: str) -> Path:
    """Download (or find in the local cache) the checkpoint a hub id names; return its local path."""
    repo_id, filename = parse_hub_id(hub_id)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CheckpointError(
            f'{hub_id}: loading from the Hugging Face Hub needs huggingface_hub: pip install "dqn2snn-plugin[hub]"'
        ) from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-file errors all mean "could not fetch"
        raise CheckpointError(
            f"{hub_id}: could not download {filename} from the Hugging Face Hub repo {repo_id} "
            f"({type(exc).__name__}: {exc})"
        ) from None
