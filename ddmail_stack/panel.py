"""The panel in the local stack as in production: nginx (TLS, keep-alive) in front of ddmail-web
(gunicorn on a unix socket), with the nginx role's own server block."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import ddmail_web
from ddmail_stack.layout import GLOBAL_DOMAIN, StackLayout
from ddmail_stack.processes import port_open, python_script, spawn, wait_for
from ddmail_stack.templates import template_env, tls_policy

# What Debian's /etc/nginx/nginx.conf gives the role's site in production, reduced to what the
# panel needs, with every path under the stack's root.
MAIN_CONF = """\
daemon off;
user root root;
worker_processes auto;  # as Debian's nginx.conf: one per core
pid {run}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    client_body_temp_path {run}/nginx/body;
    proxy_temp_path {run}/nginx/proxy;
    fastcgi_temp_path {run}/nginx/fastcgi;
    uwsgi_temp_path {run}/nginx/uwsgi;
    scgi_temp_path {run}/nginx/scgi;
    include {site};
}}
"""


def mta_sts_certificates(layout: StackLayout) -> Path:
    """Where nginx finds <mta-sts.domain>.pem and .key of the customer domains' policy hosts
    (ddmail_stack.mta_sts puts them there)."""
    return layout.tls / "mta-sts"


def nginx_vars(layout: StackLayout) -> dict[str, object]:
    """Local values for every variable of ansible/roles/nginx/defaults/main.yml."""
    return {
        **tls_policy(),
        "nginx_panel_listen": [f"127.0.0.1:{layout.web_port}"],
        "nginx_anon_listen": f"127.0.0.1:{layout.anon_http_port}",
        "nginx_panel_server_names": f"localhost 127.0.0.1 {GLOBAL_DOMAIN}",
        "nginx_panel_certificate": str(layout.server_cert),
        "nginx_panel_certificate_key": str(layout.server_key),
        "nginx_panel_upstream_socket": str(layout.socket("web")),
        "nginx_panel_error_log": "stderr",
        "nginx_panel_error_pages": str(Path(ddmail_web.__file__).parent / "static" / "errors"),
        "nginx_mta_sts_certificates_dir": str(mta_sts_certificates(layout)),
    }


def render_nginx(layout: StackLayout) -> None:
    conf_dir = layout.etc / "nginx"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (layout.run / "nginx").mkdir(parents=True, exist_ok=True)
    site = conf_dir / "ddmail-panel.conf"
    site.write_text(
        template_env("nginx").get_template("ddmail-panel.conf.j2").render(nginx_vars(layout))
    )
    (conf_dir / "nginx.conf").write_text(MAIN_CONF.format(run=layout.run, site=site))


def reload_nginx(layout: StackLayout) -> None:
    """nginx loads its configuration and certificates again."""
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = layout.etc / "nginx" / "nginx.conf"
    subprocess.run(
        [nginx_bin, "-p", str(layout.run / "nginx"), "-c", str(conf), "-s", "reload"],
        check=True,
        capture_output=True,
    )


def start_panel(layout: StackLayout) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """ddmail-web, then nginx in front of it; both answering when this returns."""
    sock = layout.socket("web")
    sock.unlink(missing_ok=True)
    web = spawn(
        [
            python_script("ddmail-web"),
            "--config",
            str(layout.etc / "ddmail.toml"),
            "--bind",
            f"unix:{sock}",
        ],
        layout.log_dir / "web.log",
    )
    wait_for("ddmail-web", sock.exists)
    render_nginx(layout)
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = layout.etc / "nginx" / "nginx.conf"
    nginx = spawn(
        [nginx_bin, "-p", str(layout.run / "nginx"), "-c", str(conf)],
        layout.log_dir / "nginx.log",
    )
    wait_for(f"nginx on port {layout.web_port}", lambda: port_open(layout.web_port))
    return web, nginx
