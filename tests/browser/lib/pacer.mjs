// A pass-through HTTP proxy in front of `conch serve` that hands on the events of a
// server-sent-event stream one at a time, `gapMs` apart. The tiny test model writes a whole
// reply faster than the browser reads once, so without this the page would only ever see a
// finished reply; with it, the page sees a stream at the pace of a real model.

import http from 'node:http';

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Starts the proxy on a free loopback port; resolves with its base URL. */
export function startPacer(target, gapMs) {
  const upstreamBase = new URL(target);
  const server = http.createServer((request, response) => {
    const upstream = http.request({
      host: upstreamBase.hostname,
      port: upstreamBase.port,
      method: request.method,
      path: request.url,
      // Host and Origin pass unchanged, so the server's same-origin checks see what the
      // browser sent.
      headers: request.headers,
    }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      if (!String(answer.headers['content-type']).startsWith('text/event-stream')) {
        answer.pipe(response);
        return;
      }
      answer.setEncoding('utf8');
      let buffer = '';
      let paced = Promise.resolve();
      answer.on('data', (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end + 2);
          buffer = buffer.slice(end + 2);
          paced = paced.then(() => sleep(gapMs)).then(() => { if (!response.destroyed) response.write(event); });
        }
      });
      answer.on('end', () => { paced.then(() => response.end(buffer)); });
    });
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
    // A browser that goes away (the stop button) is passed on, so the server sees it too.
    response.on('close', () => { if (!response.writableFinished) upstream.destroy(); });
  });
  // Neither the proxy nor its connections keep the test process alive once the tests are done.
  server.on('connection', (socket) => socket.unref());
  server.unref();
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}
