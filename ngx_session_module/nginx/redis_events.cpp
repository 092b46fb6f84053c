#include "nginx/redis_events.hpp"

#include <hiredis/async.h>

namespace session::ngx {
namespace {

// The hiredis fd is wrapped in an ngx_connection_t so that nginx's event
// module polls it. Level-triggered events: hiredis reads at most one buffer
// per call, so an edge-triggered read could strand a reply in the socket.

void on_read_event(ngx_event_t* ev) noexcept {
    auto* c = static_cast<ngx_connection_t*>(ev->data);
    redisAsyncHandleRead(static_cast<redisAsyncContext*>(c->data));
}

void on_write_event(ngx_event_t* ev) noexcept {
    auto* c = static_cast<ngx_connection_t*>(ev->data);
    redisAsyncHandleWrite(static_cast<redisAsyncContext*>(c->data));
}

void ev_add_read(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (!c->read->active) {
        ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}

void ev_del_read(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}

void ev_add_write(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (!c->write->active) {
        ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}

void ev_del_write(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}

// hiredis is about to close the fd itself: release the nginx side without
// closing it a second time.
void ev_cleanup(void* data) noexcept {
    auto* c = static_cast<ngx_connection_t*>(data);
    ev_del_read(c);
    ev_del_write(c);
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
    ngx_free_connection(c);  // reads c->fd (the files[] slot of poll-like modules)
    c->fd = static_cast<ngx_socket_t>(-1);
}

}  // namespace

bool attach_to_event_loop(redisAsyncContext* ac, ngx_log_t* log) noexcept {
    ngx_connection_t* c = ngx_get_connection(ac->c.fd, log);
    if (c == nullptr) {
        return false;
    }
    c->data = ac;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = on_read_event;
    c->write->handler = on_write_event;

    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return true;
}

}  // namespace session::ngx
