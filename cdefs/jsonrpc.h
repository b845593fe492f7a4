/* spdk/jsonrpc.h: answering JSON-RPC requests in-process and a JSON-RPC client. */

#define SPDK_JSONRPC_ERROR_PARSE_ERROR ...
#define SPDK_JSONRPC_ERROR_INVALID_REQUEST ...
#define SPDK_JSONRPC_ERROR_METHOD_NOT_FOUND ...
#define SPDK_JSONRPC_ERROR_INVALID_PARAMS ...
#define SPDK_JSONRPC_ERROR_INTERNAL_ERROR ...
#define SPDK_JSONRPC_ERROR_INVALID_STATE ...

struct spdk_jsonrpc_server;
struct spdk_jsonrpc_client;
struct spdk_jsonrpc_client_request;

struct spdk_jsonrpc_client_response {
	struct spdk_json_val *version;
	struct spdk_json_val *id;
	struct spdk_json_val *result;
	struct spdk_json_val *error;
	...;
};

/* Server side: respond to a request */
struct spdk_json_write_ctx *spdk_jsonrpc_begin_result(struct spdk_jsonrpc_request *request);
void spdk_jsonrpc_end_result(struct spdk_jsonrpc_request *request, struct spdk_json_write_ctx *w);
void spdk_jsonrpc_send_bool_response(struct spdk_jsonrpc_request *request, bool value);
void spdk_jsonrpc_send_error_response(struct spdk_jsonrpc_request *request,
				      int error_code, const char *msg);

/* Client side */
struct spdk_json_write_ctx *spdk_jsonrpc_begin_request(struct spdk_jsonrpc_client_request *request,
		int32_t id, const char *method);
void spdk_jsonrpc_end_request(struct spdk_jsonrpc_client_request *request,
			      struct spdk_json_write_ctx *w);
struct spdk_jsonrpc_client *spdk_jsonrpc_client_connect(const char *addr, int addr_family);
void spdk_jsonrpc_client_close(struct spdk_jsonrpc_client *client);
struct spdk_jsonrpc_client_request *spdk_jsonrpc_client_create_request(void);
void spdk_jsonrpc_client_free_request(struct spdk_jsonrpc_client_request *req);
int spdk_jsonrpc_client_send_request(struct spdk_jsonrpc_client *client,
				     struct spdk_jsonrpc_client_request *req);
int spdk_jsonrpc_client_poll(struct spdk_jsonrpc_client *client, int timeout);
struct spdk_jsonrpc_client_response *spdk_jsonrpc_client_get_response(
	struct spdk_jsonrpc_client *client);
void spdk_jsonrpc_client_free_response(struct spdk_jsonrpc_client_response *resp);

/* v26.05: batch requests (begin_request/end_request add to the batch in
 * between). PYSPDK_HAS_JSONRPC_BATCH is 0 on v26.01 and these names leave lib. */
static const long PYSPDK_HAS_JSONRPC_BATCH;
int spdk_jsonrpc_begin_batch(struct spdk_jsonrpc_client_request *request);
void spdk_jsonrpc_end_batch(struct spdk_jsonrpc_client_request *request);

void spdk_jsonrpc_set_log_level(enum spdk_log_level level);
