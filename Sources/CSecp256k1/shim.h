#ifndef CAIRN_CSECP256K1_SHIM_H
#define CAIRN_CSECP256K1_SHIM_H
#include <secp256k1.h>
#endif
