"""The registry's own limit: DELETE every `repo digest` line, N in flight, keep-alive."""
import http.client
import sys
import threading

host, path, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [line.split() for line in open(path)]
lock = threading.Lock()
failed = []


def work(chunk):
    conn = http.client.HTTPConnection(host)
    for repo, digest in chunk:
        conn.request("DELETE", f"/v2/{repo}/manifests/{digest}")
        response = conn.getresponse()
        response.read()
        if response.status not in (202, 404):
            with lock:
                failed.append((repo, digest, response.status))


chunks = [lines[i::workers] for i in range(workers)]
threads = [threading.Thread(target=work, args=(c,)) for c in chunks]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failed:
    raise SystemExit(f"{len(failed)} deletes failed: {failed[:3]}")
