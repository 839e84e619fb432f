"""The real Docker engine (started by services.ensure_docker when installed and not running):
import a one-binary image built here (no registry is reachable), run it with the limits the
validator will use, read its output and published port, and remove it."""
import io
import shutil
import subprocess
import tarfile
import uuid

import pytest

pytestmark = pytest.mark.docker

SERVER_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
int main(void) {
  printf("hello from the engine\n"); fflush(stdout);
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(8501);
  bind(s, (struct sockaddr *)&a, sizeof a); listen(s, 4);
  for (;;) { int c = accept(s, 0, 0); const char *r = "HTTP/1.0 200 OK\r\n\r\nAVAILABLE";
             write(c, r, strlen(r)); close(c); }
}
"""


@pytest.fixture(scope="module")
def tiny_image(docker_engine, tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the one-binary test image")
    d = tmp_path_factory.mktemp("img")
    (d / "s.c").write_text(SERVER_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(d / "server"), str(d / "s.c")], check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(d / "server"), arcname="server")
    tag = f"tfsr-test-tiny:{uuid.uuid4().hex[:8]}"
    docker_engine.api.import_image_from_data(buf.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    yield tag
    docker_engine.images.remove(tag, force=True)


def test_run_with_limits_port_and_cleanup(docker_engine, tiny_image):
    import urllib.request
    label = uuid.uuid4().hex
    c = docker_engine.containers.run(
        tiny_image, ["/server"], detach=True, init=False, labels={"tfsr.test": label},
        ports={"8501/tcp": ("127.0.0.1", None)}, mem_limit="64m", pids_limit=32, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], read_only=True)
    try:
        c.reload()
        host_port = c.attrs["NetworkSettings"]["Ports"]["8501/tcp"][0]
        assert host_port["HostIp"] == "127.0.0.1"
        import time
        deadline = time.monotonic() + 20
        body = None
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{host_port['HostPort']}", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        assert body == b"AVAILABLE"
        assert b"hello from the engine" in c.logs()
        assert c.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
    finally:
        c.remove(force=True)
    assert docker_engine.containers.list(all=True, filters={"label": f"tfsr.test={label}"}) == []
