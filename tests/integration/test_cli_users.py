"""`radservice user ...` and `radservice check` as an admin types them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ollama_standin import VERSION, ollama_standin
from tests.support import free_port, radservice, write_config

pytestmark = pytest.mark.integration


def test_user_add_list_revoke(tmp_path: Path, db_url: str) -> None:
    config = str(write_config(tmp_path, port=free_port(), db_url=db_url))
    added = radservice("user", "add", "dr.hale", "--role", "attending", "--config", config, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    token = added.stdout.splitlines()[-1]
    assert token.startswith("rs_") and len(token) > 40

    listed = radservice("user", "list", "--config", config, cwd=tmp_path)
    assert listed.stdout.splitlines() == ["dr.hale\tradiologist\tactive\tdr.hale"]
    assert token not in listed.stdout

    second = radservice("user", "token", "dr.hale", "--config", config, cwd=tmp_path)
    assert second.returncode == 0 and second.stdout.strip() != token

    revoked = radservice("user", "revoke", "dr.hale", "--config", config, cwd=tmp_path)
    assert revoked.returncode == 0
    assert "2 token(s)" in revoked.stdout
    listed = radservice("user", "list", "--config", config, cwd=tmp_path)
    assert listed.stdout.splitlines() == ["dr.hale\tradiologist\trevoked\tdr.hale"]


def test_user_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, port=free_port()))
    bad_role = radservice("user", "add", "x", "--role", "janitor", "--config", config, cwd=tmp_path)
    assert bad_role.returncode == 2
    assert "unknown role 'janitor'" in bad_role.stderr
    assert radservice("user", "add", "x", "--role", "editor", "--config", config, cwd=tmp_path).returncode == 0
    again = radservice("user", "add", "x", "--role", "editor", "--config", config, cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    missing = radservice("user", "revoke", "nobody", "--config", config, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no user 'nobody'" in missing.stderr
    for result in (bad_role, again, missing):
        assert "Traceback" not in result.stderr


def test_db_upgrade_and_check(tmp_path: Path, db_url: str) -> None:
    config = str(write_config(tmp_path, port=free_port(), db_url=db_url, extra="[llm]\nenabled = false\n"))
    before = radservice("check", "--config", config, cwd=tmp_path)
    assert before.returncode == 0, before.stdout + before.stderr
    assert "pending" in before.stdout
    upgraded = radservice("db", "upgrade", "--config", config, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    after = radservice("check", "--config", config, cwd=tmp_path)
    assert "schema up to date" in after.stdout and "llm: off" in after.stdout
    assert "ris: not configured" in after.stdout


def test_check_opens_an_mllp_connection_to_the_ris(tmp_path: Path) -> None:
    from tests.ris_peer import RisPeer

    port = free_port()
    config = write_config(tmp_path, port=free_port(),
                          extra=f'[llm]\nenabled = false\n[ris]\nhost = "127.0.0.1"\nport = {port}\n')
    down = radservice("check", "--config", str(config), cwd=tmp_path)
    assert down.returncode == 1 and f"ris: FAILED (no MLLP connection to 127.0.0.1:{port}" in down.stdout, down.stdout
    with RisPeer(port) as ris:
        up = radservice("check", "--config", str(config), cwd=tmp_path)
        assert up.returncode == 0 and f"ris: ok (MLLP connection to 127.0.0.1:{port})" in up.stdout, up.stdout
    assert ris.connections == 1 and ris.received == []


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_check_reaches_the_llm_and_looks_for_the_model(tmp_path: Path, api: str) -> None:
    with ollama_standin() as standin:
        url = standin.url + ("/v1" if api == "openai" else "")
        for model, code, said in (("llama3.2:3b", 0, "llm: ok"), ("absent:1b", 1, "has no model 'absent:1b'")):
            config = write_config(tmp_path, port=free_port(),
                                  extra=f'[llm]\napi = "{api}"\nurl = "{url}"\nmodel = "{model}"\n')
            result = radservice("check", "--config", str(config), cwd=tmp_path)
            assert result.returncode == code and said in result.stdout, result.stdout + result.stderr
        if api == "ollama":
            assert f"Ollama {VERSION}" in result.stdout
    gone = write_config(tmp_path, port=free_port(), extra=f'[llm]\napi = "{api}"\nurl = "{url}"\n')
    result = radservice("check", "--config", str(gone), cwd=tmp_path)
    assert result.returncode == 1 and "unreachable" in result.stdout and "Traceback" not in result.stderr


def test_check_fails_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, port=free_port(), db_url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    result = radservice("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "database: FAILED" in result.stdout


def test_user_add_takes_the_name_in_parts(tmp_path: Path, db_url: str) -> None:
    from radservice.db.session import make_engine, make_sessionmaker, session_scope
    from radservice.users import service as users

    config = str(write_config(tmp_path, port=free_port(), db_url=db_url))
    added = radservice("user", "add", "dr.hopper", "--role", "radiologist", "--family", "Hopper", "--given", "Grace",
                       "--prefix", "Dr.", "--degree", "PhD", "--config", config, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    no_family = radservice("user", "add", "dr.x", "--role", "radiologist", "--given", "Grace", "--config", config,
                           cwd=tmp_path)
    assert no_family.returncode == 2 and "need --family" in no_family.stderr
    engine = make_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        user = users.get_user(session=session, username="dr.hopper")
        assert user is not None
        assert (user.family_name, user.given_name, user.name_prefix, user.degree) == ("Hopper", "Grace", "Dr.", "PhD")
        assert user.display_name == "Dr. Grace Hopper, PhD"
        assert users.person_name(user).family == "Hopper"
    engine.dispose()


def test_user_name_sets_the_parts_of_an_existing_user(tmp_path: Path, db_url: str) -> None:
    from radservice.db.session import make_engine, make_sessionmaker, session_scope
    from radservice.users import service as users

    config = str(write_config(tmp_path, port=free_port(), db_url=db_url))
    assert radservice("user", "add", "dr.do", "--role", "radiologist", "--display-name", "Anh Do",
                      "--config", config, cwd=tmp_path).returncode == 0
    named = radservice("user", "name", "dr.do", "--family", "Do", "--given", "Anh", "--degree", "MD",
                       "--config", config, cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    missing = radservice("user", "name", "nobody", "--family", "X", "--config", config, cwd=tmp_path)
    assert missing.returncode == 1 and "no user 'nobody'" in missing.stderr
    engine = make_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        user = users.get_user(session=session, username="dr.do")
        assert user is not None and (user.family_name, user.given_name, user.degree) == ("Do", "Anh", "MD")
        assert user.display_name == "Anh Do, MD"
    engine.dispose()
