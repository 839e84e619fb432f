"""The Airflow image (docker/airflow.Dockerfile) copies whole project packages, never single files:
every package the DAGs, the plugins and what they import from the project reach must be copied
into it, and be part of its recipe hash (deploy/local_images.py), or a task fails in the compose
stack with "No module named ..." (found once by the compose e2e test)."""
import ast
import os
import re

from deploy import local_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PACKAGES = ("validation", "registry", "production", "exporters", "standin", "tfs_api", "serving")


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _module_file(mod: str) -> str | None:
    path = os.path.join(ROOT, *mod.split("."))
    if os.path.isfile(path + ".py"):
        return path + ".py"
    if os.path.isfile(os.path.join(path, "__init__.py")):
        return os.path.join(path, "__init__.py")
    return None


def packages_reached() -> set[str]:
    """Top-level project packages reached from dags/ and plugins/ at module level (function-level
    imports too: a task imports them when it runs)."""
    todo = [os.path.join(d, f) for top in ("dags", "plugins") for d, _, fs in os.walk(os.path.join(ROOT, top))
            for f in fs if f.endswith(".py")]
    seen, reached = set(todo), set()
    while todo:
        for mod in _imports(todo.pop()):
            if mod.split(".")[0] not in PACKAGES:
                continue
            f = _module_file(mod)
            if f is None or f in seen:
                continue
            seen.add(f)
            todo.append(f)
            reached.add(os.path.relpath(f, ROOT).split(os.sep)[0])
    return reached


def test_every_package_the_airflow_side_imports_is_copied_whole():
    reached = packages_reached()
    assert {"registry", "tfs_api", "serving", "production"} <= reached, reached  # the walk works
    dockerfile = open(os.path.join(ROOT, "docker", "airflow.Dockerfile")).read()
    copied = {p for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for p in line.split()[:-1]}
    assert not [p for p in copied if p.split("/")[0] in PACKAGES and "/" in p.rstrip("/")], \
        f"single files copied out of a package: {sorted(copied)}"
    recipe = set(local_images.IMAGES["airflow"].copies)
    for pkg in sorted(reached - {"exporters", "standin"}):  # TensorFlow-side packages: reached only in tasks
        assert pkg in copied, f"{pkg}/ is imported on the Airflow side but not copied by docker/airflow.Dockerfile"
        assert pkg in recipe, f"{pkg}/ is not part of the airflow image's recipe hash (deploy/local_images.py)"


def _allowed_by_dockerignore() -> list[str]:
    """The paths .dockerignore lets into the build context (it excludes everything, then allows)."""
    lines = [ln.strip() for ln in open(os.path.join(ROOT, ".dockerignore")).read().splitlines()]
    assert "*" in lines, ".dockerignore is expected to exclude everything first, then allow paths"
    return [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]


def test_everything_the_images_copy_is_in_the_build_context():
    """A COPY of a path .dockerignore leaves out fails the build ("file not found in build context"),
    found once only when the compose stack and the worker image were built in a cold test run."""
    allowed = _allowed_by_dockerignore()
    missing = []
    for name in sorted(os.listdir(os.path.join(ROOT, "docker"))):
        if not name.endswith(".Dockerfile"):
            continue
        for line in re.findall(r"^COPY (?!--from)(.+)$", open(os.path.join(ROOT, "docker", name)).read(), re.M):
            for src in line.split()[:-1]:
                src = src.rstrip("/")
                if not any(src == a or src.startswith(a + "/") for a in allowed):
                    missing.append(f"docker/{name}: COPY {src}")
    assert not missing, ".dockerignore keeps these out of the build context:\n" + "\n".join(missing)
    for image in local_images.IMAGES.values():   # the recipes hash what the images copy: it must be there too
        for path in image.copies:
            assert any(path.rstrip("/") == a or path.startswith(a + "/") for a in allowed), \
                f"{image.repo}: {path} is hashed but .dockerignore leaves it out of the build context"
